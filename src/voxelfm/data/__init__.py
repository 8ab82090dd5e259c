"""voxelfm.data"""
