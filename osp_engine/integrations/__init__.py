"""Optional integrations with other training frameworks, each imported only when used:
`osp_engine.integrations.lightning` (PyTorch Lightning's callback)."""
