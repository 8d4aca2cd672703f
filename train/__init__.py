"""boxseg.train"""
