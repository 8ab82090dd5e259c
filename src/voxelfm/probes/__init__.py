"""voxelfm.probes"""
