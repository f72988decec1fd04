"""Static files of the operator dashboard (served by controller/dashboard.py); a package so they ship."""
