"""boxseg.runtime"""
