"""A master made public: its file and header, previews, the nightly report."""
