"""osp studio from a checkout: `streamlit run app.py`. The studio is the osp_studio package."""
from osp_studio.frame import serve

serve()
