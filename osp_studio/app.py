"""osp studio once installed: the script `osp studio` hands to Streamlit (app.py does the same in a checkout)."""
from osp_studio.frame import serve

serve()
