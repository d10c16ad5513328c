"""The inference layer: one backend interface, ONNX export, TensorRT engine cache, benchmark.

.. code-block:: python

    from deep_vision.inference import load_backend

    net = load_backend("models/homography.onnx", "auto")   # TensorRT > ONNX Runtime CUDA > CPU
    out = net.run({"patches": patches})                    # dict[str, np.ndarray] → dict[str, np.ndarray]
    print(net.name, net.device, net.precision, net.inputs, net.outputs)

Modules: ``backend`` (interface, :class:`TensorSpec`), ``onnxruntime_backend``,
``torch_backend``, ``tensorrt_backend`` (imports tensorrt only when used),
``selection`` (:func:`load_backend`, ``auto``), ``devices`` (what the machine has),
``modelcard``, ``export``, ``tensorrt_ops`` (TensorRT 10's ONNX operator list),
``engine_cache``, ``calibration`` (INT8 from a bag), ``bench``.
Importing this package imports neither torch, onnxruntime nor tensorrt.
"""

from deep_vision.inference.backend import PRECISIONS, InferenceBackend, TensorSpec
from deep_vision.inference.engine_cache import EngineCache, cache_key
from deep_vision.inference.export import export_onnx
from deep_vision.inference.modelcard import ModelCard
from deep_vision.inference.selection import BACKENDS, load_backend

__all__ = ["BACKENDS", "PRECISIONS", "EngineCache", "InferenceBackend", "ModelCard", "TensorSpec", "cache_key",
           "export_onnx", "load_backend"]
