// Sim3DR: a small z-buffer triangle rasterizer for vox3d (C++17, no dependencies).
//
// Conventions (see Sim3DR/README.md):
//  * image coordinates: x right, y down, pixel (i, j) = row i, column j, its centre at
//    (j + 0.5, i + 0.5); z larger = nearer the camera (depth test keeps the largest z,
//    strictly: on an exact tie the first drawn wins);
//  * vertices are snapped to 1/256 pixel and edge functions are exact 64-bit integers, so
//    the top-left fill rule is exact: a pixel centre on an edge shared by two triangles is
//    drawn by exactly one of them, and a closed tessellation leaves no cracks;
//  * front faces are counter-clockwise in a y-up view of the image (clockwise in the
//    y-down pixel grid), which is what a model with CCW-from-outside triangles becomes
//    after the 3DDFA-V2 projection (y flipped);
//  * triangles with a non-finite vertex, an index out of range, zero snapped area or a
//    vertex beyond +-2^20 pixels are skipped;
//  * shading is deferred: rasterization keeps the nearest triangle per pixel, then each
//    covered pixel is shaded once with barycentric interpolation of vertex colours and
//    (when lit) vertex normals, per-pixel ambient + Lambert + Phong (classic reflection
//    vector, viewer along +z), and blended over the image with `alpha`.  Optionally
//    (S3Light::gouraud) the lighting is evaluated per vertex and the lit colours are
//    interpolated instead (faster, smoother highlights lost).
#pragma once
#include <cstdint>

extern "C" {

struct S3Mesh {
    const float* vertices;    // (n_vertices, 3) image coordinates
    const int32_t* triangles;  // (n_triangles, 3)
    const float* colors;       // (n_vertices, 3) in [0, 1], or nullptr (use default_color)
    const float* normals;      // (n_vertices, 3) outward unit normals, or nullptr (computed)
    int64_t n_vertices;
    int64_t n_triangles;
    float default_color[3];
};

struct S3Light {
    int enabled;          // 0: pure (interpolated) vertex colours
    float ambient[3];
    int n_directional;
    const float* directions;  // (n, 3) towards the light, image axes (x right, y down, z to viewer)
    const float* colors;      // (n, 3)
    float specular;           // Phong coefficient (0 = Lambert only)
    float shininess;
    int gouraud;              // 0: per-pixel (Phong) shading; 1: per-vertex (Gouraud) lighting
};

struct S3Target {
    uint8_t* image;      // (height, width, 3), read (background) and written
    float* depth;        // (height, width) or nullptr; written: z where covered, -inf elsewhere
    uint8_t* mask;       // (height, width) or nullptr; written: 1 where covered
    int32_t* coverage;   // (height, width) or nullptr; debug: += 1 per triangle covering a pixel
    int32_t* tri_index;  // (height, width) or nullptr; written: visible triangle (-1 none)
    int32_t* mesh_index; // (height, width) or nullptr; written: visible mesh (-1 none)
    int height;
    int width;
    float alpha;         // 1 = opaque
    int cull;            // 0 none (both sides drawn), 1 cull back faces, 2 cull front faces
};

// Render `n_meshes` meshes into one target (shared z-buffer), rows split over `n_threads`.
// Returns the number of triangles skipped as invalid (non-finite, out of range, too large).
int64_t s3_render(const S3Mesh* meshes, int n_meshes, const S3Light* light, S3Target* target,
                  int n_threads);

// Render `n_images` targets; image k draws meshes [offsets[k], offsets[k+1]) with
// lights[k].  Images are distributed over `n_threads` threads.  Returns skipped triangles.
int64_t s3_render_batch(const S3Mesh* meshes, const int64_t* offsets, int n_images,
                        const S3Light* lights, S3Target* targets, int n_threads);

// Area-weighted vertex normals of a right-handed mesh, cross(v1 - v0, v2 - v0), normalised
// (zero for unused vertices).  `sign` = -1 flips them (use for image coordinates).
void s3_vertex_normals(const float* vertices, const int32_t* triangles, int64_t n_vertices,
                       int64_t n_triangles, float sign, float* out);
}
