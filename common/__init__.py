"""Framework-neutral core of gansuite: spec, parameters, streams, data, oracle, protocol.

Imports numpy (and Pillow for image files) only, never a deep-learning framework,
so every backend's environment (numpy 1.23 for MXNet, 2.x elsewhere) can use it.
"""
