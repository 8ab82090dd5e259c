"""voxelfm.io"""
