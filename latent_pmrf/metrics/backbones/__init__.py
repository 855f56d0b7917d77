"""Fixed-architecture networks behind the face metrics (Deg, LMD), with the parameter names of
the released checkpoints so those load strictly."""
