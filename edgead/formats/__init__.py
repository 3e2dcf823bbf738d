"""What edgead keeps on disk, one owner per format: point-cloud files (``pointcloud``), data sets in the Real3D-AD
and Anomaly-ShapeNet layouts (``dataset``), run directories (``rundir``), engine manifests (``engine``), threshold
calibrations (``threshold``) and scene calibrations (``scene``). ``digest`` holds the content hash they share.

The bottom layer: it imports numpy and nothing else of edgead. Everything that decides pass or fail is covered by a
content hash, checked when it is read: a changed file or field is refused with an error naming it.
"""
