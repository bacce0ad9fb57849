"""Label Studio ML-backend protocol server over ``training``'s Detector.

Runs as its own process.  From ``annotations`` it imports only pure packages.
"""
