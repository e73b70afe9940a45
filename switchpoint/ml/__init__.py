"""Build-time machine learning: ONNX graphs for the encoders and classifier heads (no torch anywhere).

The router only loads what these modules write into the models directory
(see `switchpoint.router.classifiers.models_dir`).
"""
