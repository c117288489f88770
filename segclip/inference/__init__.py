"""Code that drives runners (a layer above ``segclip.runtime``, below ``segclip.export``).

* ``compare``  -- the one comparator: any runners on the same images, agreement, mIoU, score deltas
  (the export parity gate and the benchmark's accuracy columns both use it);
* ``evaluate`` -- whole images through a runner or the PyTorch model (``predict_image``), and eval's
  confusion-matrix metrics;
* ``predict``  -- streaming whole-raster prediction (``Predictor``, ``predict_paths``: the Python
  face of ``segclip predict``);
* ``outputs``  -- what predict writes beside the class map: output names, counts and areas, preview;
* ``vector``   -- ``predict --vector``: the written class map as one polygon layer (GPKG/GeoJSON);
* ``speed``    -- which artifact runs fastest here: export's and ``segclip tune``'s speed record.
"""
