"""Voice features: PCM decoding and conditioning, CMP's voice activity detection, the CMP-exact
filterbank and MFCC, the features stage and its HDF5 shards, and the training-time feature
reader. (docs/architecture.md: the audio room.)"""
