"""The camera: from photons to RGB (RAW files, CFA handling, standard ISPs, neural imaging pipelines, virtual camera)."""
