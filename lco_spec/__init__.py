"""What a fine-tuning job is, in pure Python: the job spec, dataset formats and graders.

This leaf package is shared by the HTTP service (which must never import torch) and the
training core, so one validation serves both: a spec that `lco train` accepts is exactly
one that `POST /v1/fine_tuning/jobs` accepts, with the same error names.
"""

from lco_spec.errors import SpecError

__all__ = ["SpecError"]
