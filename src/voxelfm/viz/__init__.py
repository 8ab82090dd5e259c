"""voxelfm.viz"""
