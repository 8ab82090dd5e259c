"""voxelfm.embed"""
