"""boxseg.bench"""
