"""voxelfm.metrics"""
