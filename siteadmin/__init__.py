"""siteadmin: the VoBox administrator's tool for ALICE torrent software installation."""

__version__ = "0.1.0"
