"""Models of single items with absolute scores: regression, two-stage (pairs, then scores), comparative scoring."""
