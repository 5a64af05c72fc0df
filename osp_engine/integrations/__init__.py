"""Optional integrations with other frameworks, each imported only when used:
`lightning` (PyTorch Lightning's callback), `ultralytics` (YOLO's trainer; Ultralytics is AGPL-3.0, an
optional extra), `detection` (torchvision's detectors in a loop of one's own), and `yolo_command`
(`osp yolo`, which imports Ultralytics only when it runs)."""
