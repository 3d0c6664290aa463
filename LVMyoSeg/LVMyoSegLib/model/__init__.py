"""The networks and what holds them: layers and variants, the masked loss, the Keras ensemble,
ONNX export and runtime, bundles with their manifests, trust pins and the model registry.
"""
