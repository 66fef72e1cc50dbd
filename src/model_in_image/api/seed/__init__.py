"""シード API（仕様書 §3 の /health /metadata /label /predict ...）。"""
