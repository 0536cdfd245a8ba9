"""The analyst: forensic analysis network (FAN), PRNU fingerprints and tampering localization."""
