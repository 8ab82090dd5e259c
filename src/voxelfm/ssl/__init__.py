"""voxelfm.ssl"""
