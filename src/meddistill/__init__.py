"""meddistill: knowledge distillation of medical-imaging networks into CPU-fast students."""
__version__ = "0.1.0"
