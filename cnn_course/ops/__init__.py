"""Operation families; import them through :mod:`cnn_course.functional`."""
