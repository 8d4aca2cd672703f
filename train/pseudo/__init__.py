"""Teacher pseudo-labellers: the BoxSeg Quality-Aware Module (QAM) and BoxTeacher's BPMA, plus their configs."""
