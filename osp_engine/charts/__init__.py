"""The charts the studio's pages and the run's report draw: Plotly figures from a run's plain data.

Pure drawing, no Streamlit and no torch: the studio (osp_studio) and `osp report` import them alike.
Plotly and pandas come with the studio extra (`pip install "osp[studio]"`)."""
