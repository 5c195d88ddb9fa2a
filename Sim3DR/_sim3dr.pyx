# cython: language_level=3, boundscheck=False, wraparound=False
"""Low-level Cython binding of the Sim3DR C++ rasterizer (rasterize.cpp).

Only :mod:`vox3d.face.render` calls this; it validates and converts arguments first.  Every
array passed here must already be C-contiguous with the documented dtype.  All rendering
runs with the GIL released.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef extern from "rasterize.h":
    ctypedef struct S3Mesh:
        const float* vertices
        const int32_t* triangles
        const float* colors
        const float* normals
        int64_t n_vertices
        int64_t n_triangles
        float default_color[3]

    ctypedef struct S3Light:
        int enabled
        float ambient[3]
        int n_directional
        const float* directions
        const float* colors
        float specular
        float shininess
        int gouraud

    ctypedef struct S3Target:
        uint8_t* image
        float* depth
        uint8_t* mask
        int32_t* coverage
        int32_t* tri_index
        int32_t* mesh_index
        int height
        int width
        float alpha
        int cull

    int64_t s3_render(const S3Mesh* meshes, int n_meshes, const S3Light* light,
                      S3Target* target, int n_threads) nogil
    int64_t s3_render_batch(const S3Mesh* meshes, const int64_t* offsets, int n_images,
                            const S3Light* lights, S3Target* targets, int n_threads) nogil
    void s3_vertex_normals(const float* vertices, const int32_t* triangles, int64_t n_vertices,
                           int64_t n_triangles, float sign, float* out) nogil


cdef const float* _fptr(object a) except? NULL:
    if a is None:
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise TypeError("expected a C-contiguous float32 array")
    return <const float*> cnp.PyArray_DATA(arr)


cdef void* _ptr(object a, object dtype) except? NULL:
    if a is None:
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        raise TypeError(f"expected a C-contiguous {np.dtype(dtype).name} array")
    if not arr.flags.writeable:
        raise ValueError("output array is read-only")
    return cnp.PyArray_DATA(arr)


cdef int _fill_mesh(S3Mesh* m, tuple mesh) except -1:
    """mesh = (vertices (V,3) f32, triangles (F,3) i32, colors (V,3) f32 | None,
    normals (V,3) f32 | None, default_color (3,) f32)."""
    vertices, triangles, colors, normals, default_color = mesh
    cdef cnp.ndarray tri = <cnp.ndarray> triangles
    if tri.dtype != np.int32 or not tri.flags.c_contiguous:
        raise TypeError("triangles must be C-contiguous int32")
    m.vertices = _fptr(vertices)
    m.triangles = <const int32_t*> cnp.PyArray_DATA(tri)
    m.colors = _fptr(colors)
    m.normals = _fptr(normals)
    m.n_vertices = vertices.shape[0]
    m.n_triangles = triangles.shape[0]
    for k in range(3):
        m.default_color[k] = default_color[k]
    return 0


cdef int _fill_light(S3Light* L, object light) except -1:
    """light = None or (ambient (3,), directions (n,3) f32, colors (n,3) f32, specular,
    shininess, gouraud)."""
    if light is None:
        L.enabled = 0
        L.n_directional = 0
        L.directions = NULL
        L.colors = NULL
        L.specular = 0
        L.shininess = 1
        L.gouraud = 0
        for k in range(3):
            L.ambient[k] = 1
        return 0
    ambient, directions, colors, specular, shininess, gouraud = light
    L.enabled = 1
    for k in range(3):
        L.ambient[k] = ambient[k]
    L.n_directional = directions.shape[0]
    L.directions = _fptr(directions)
    L.colors = _fptr(colors)
    L.specular = specular
    L.shininess = shininess
    L.gouraud = 1 if gouraud else 0
    return 0


cdef int _fill_target(S3Target* T, object image, object depth, object mask, object coverage,
                      object tri_index, object mesh_index, float alpha, int cull) except -1:
    T.image = <uint8_t*> _ptr(image, np.uint8)
    T.depth = <float*> _ptr(depth, np.float32)
    T.mask = <uint8_t*> _ptr(mask, np.uint8)
    T.coverage = <int32_t*> _ptr(coverage, np.int32)
    T.tri_index = <int32_t*> _ptr(tri_index, np.int32)
    T.mesh_index = <int32_t*> _ptr(mesh_index, np.int32)
    T.height = image.shape[0]
    T.width = image.shape[1]
    T.alpha = alpha
    T.cull = cull
    return 0


def render(list meshes, image, depth, mask, light, float alpha=1.0, int cull=0,
           int n_threads=1, coverage=None, tri_index=None, mesh_index=None):
    """Render `meshes` (see `_fill_mesh`) into `image` (H, W, 3) uint8, in place.

    depth (H, W) float32 and mask (H, W) uint8 are outputs (or None); coverage, tri_index,
    mesh_index (H, W) int32 are optional debug outputs (coverage is added to).
    Returns the number of invalid triangles skipped.
    """
    cdef int n = len(meshes)
    cdef S3Mesh* ms = <S3Mesh*> malloc(max(n, 1) * sizeof(S3Mesh))
    cdef S3Light L
    cdef S3Target T
    cdef int64_t skipped
    if ms == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            _fill_mesh(&ms[i], meshes[i])
        _fill_light(&L, light)
        _fill_target(&T, image, depth, mask, coverage, tri_index, mesh_index, alpha, cull)
        with nogil:
            skipped = s3_render(ms, n, &L, &T, n_threads)
    finally:
        free(ms)
    return skipped


def render_batch(list per_image_meshes, list images, list depths, list masks, list lights,
                 list alphas, int cull=0, int n_threads=1):
    """Render a batch: image k gets the meshes in per_image_meshes[k], lights[k],
    alphas[k].  images / depths / masks are lists of arrays as in `render` (None allowed
    for depth and mask).  Images are spread over `n_threads` threads.  Returns skipped."""
    cdef int n_img = len(images)
    cdef int64_t total = 0
    for k in range(n_img):
        total += len(per_image_meshes[k])
    cdef S3Mesh* ms = <S3Mesh*> malloc(max(total, 1) * sizeof(S3Mesh))
    cdef int64_t* offs = <int64_t*> malloc((n_img + 1) * sizeof(int64_t))
    cdef S3Light* Ls = <S3Light*> malloc(max(n_img, 1) * sizeof(S3Light))
    cdef S3Target* Ts = <S3Target*> malloc(max(n_img, 1) * sizeof(S3Target))
    cdef int64_t skipped, pos = 0
    try:
        if ms == NULL or offs == NULL or Ls == NULL or Ts == NULL:
            raise MemoryError()
        for k in range(n_img):
            offs[k] = pos
            for mesh in per_image_meshes[k]:
                _fill_mesh(&ms[pos], mesh)
                pos += 1
            _fill_light(&Ls[k], lights[k])
            _fill_target(&Ts[k], images[k], depths[k], masks[k], None, None, None,
                         alphas[k], cull)
        offs[n_img] = pos
        with nogil:
            skipped = s3_render_batch(ms, offs, n_img, Ls, Ts, n_threads)
    finally:
        free(ms)
        free(offs)
        free(Ls)
        free(Ts)
    return skipped


def vertex_normals(vertices, triangles, float sign=1.0):
    """Area-weighted unit vertex normals (V, 3) float32 of cross(v1 - v0, v2 - v0) * sign."""
    cdef cnp.ndarray v = np.ascontiguousarray(vertices, dtype=np.float32)
    cdef cnp.ndarray t = np.ascontiguousarray(triangles, dtype=np.int32)
    cdef cnp.ndarray out = np.zeros((v.shape[0], 3), dtype=np.float32)
    cdef const float* vp = <const float*> cnp.PyArray_DATA(v)
    cdef const int32_t* tp = <const int32_t*> cnp.PyArray_DATA(t)
    cdef float* op = <float*> cnp.PyArray_DATA(out)
    cdef int64_t nv = v.shape[0], nt = t.shape[0]
    with nogil:
        s3_vertex_normals(vp, tp, nv, nt, sign, op)
    return out
