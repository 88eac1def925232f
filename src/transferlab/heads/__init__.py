"""Classical heads (SVM, logistic regression, random forest) on layer features."""
