"""Reports: ROC scoring (AUC, balanced accuracy, TPR at low FPR) and plots."""
