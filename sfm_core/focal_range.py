"""The focal lengths real lenses have, as a multiple of the image's long side.

focal / long side equals the full-frame-equivalent focal / 36 mm, so 0.3x is an 11 mm
equivalent (the widest rectilinear lenses: phone ultra-wides are 13-16 mm) and 25x a 900 mm one
(a super-telephoto or a bridge camera's long end). Outside that range the focal length is wrong,
not the lens: an EXIF focal there is rejected at ingest (storage.images), and a model holding
such a camera is suspect (sfm_core.verdict). The internet collection of issue 18 had EXIF focals
of 47,927 px on photos about 1,050 px wide, and ended with cameras of up to 405,078 px.
"""
MIN_FOCAL_FACTOR = 0.3
MAX_FOCAL_FACTOR = 25.0
