"""Datasets on disk: prepared RAW/target pairs, splits and patch sampling."""
