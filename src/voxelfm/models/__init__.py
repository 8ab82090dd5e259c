"""voxelfm.models"""
