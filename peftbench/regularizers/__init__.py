"""Regularizers: extra loss terms built from conf/regularizer/ and called through the method hooks."""
