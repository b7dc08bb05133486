"""vtc_deploy.train"""
