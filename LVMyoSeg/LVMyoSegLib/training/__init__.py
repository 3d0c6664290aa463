"""Training and its experiments: the two-stage training loop, augmentation, the ED/ES frames
of many hearts, patient-level splits, leave-one-out, cross-validation and function validation.
"""
