"""Static files of the operator dashboard (served by controller/status/dashboard.py); a package so they ship."""
