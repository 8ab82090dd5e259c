"""voxelfm.report"""
