"""osp studio: the Streamlit pages over the run store (`streamlit run app.py` in a checkout, `osp studio`
once installed with `pip install "osp[studio]"`). One module per page, with a `render()` the frame puts
behind st.navigation, and one per shared concept; no page imports torch."""
