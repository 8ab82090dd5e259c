"""voxelfm.preprocess"""
