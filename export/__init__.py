"""boxseg.export"""
