// Sim3DR rasterizer kernel.  See rasterize.h for the conventions.
#include "rasterize.h"

#include <algorithm>
#include <climits>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kSub = 256;              // sub-pixel steps per pixel (8 bits)
constexpr int64_t kHalf = kSub / 2;        // pixel centre offset
constexpr double kMaxCoord = 1048576.0;    // |coordinate| limit in pixels (2^20)

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

// floor(256 v + 0.5) for |v| <= kMaxCoord (checked before), without a libm call
inline int64_t snap(float v) {
    const double d = static_cast<double>(v) * kSub + 0.5;
    const int64_t r = static_cast<int64_t>(d);  // truncates towards zero
    return r - (static_cast<double>(r) > d);
}

// A triangle after snapping, oriented so that `area` > 0 (inside: all edge functions >= 0).
struct Tri {
    int64_t X[3], Y[3];
    int32_t idx[3];
    int64_t area;
    bool back;  // true when the triangle faces away from the viewer
    double z[3];
};

// A vertex snapped to the sub-pixel grid; x == kInvalid marks a non-finite / too-far one.
struct SnapV {
    int32_t x, y;
    float z;
};
constexpr int32_t kInvalid = INT32_MIN;

void snap_vertices(const S3Mesh& m, SnapV* out) {
    for (int64_t i = 0; i < m.n_vertices; ++i) {
        const float* v = m.vertices + 3 * i;
        if (std::fabs(v[0]) <= kMaxCoord && std::fabs(v[1]) <= kMaxCoord && std::isfinite(v[2])) {
            out[i] = SnapV{static_cast<int32_t>(snap(v[0])), static_cast<int32_t>(snap(v[1])), v[2]};
        } else {
            out[i] = SnapV{kInvalid, kInvalid, 0.0f};  // also catches NaN
        }
    }
}

// Returns 0 on success, 1 for a degenerate (zero-area) triangle, 2 for an invalid one.
inline int setup(const S3Mesh& m, const SnapV* sv, int64_t t, Tri& tri) {
    const int32_t* ti = m.triangles + 3 * t;
    for (int k = 0; k < 3; ++k) {
        const int32_t i = ti[k];
        if (i < 0 || i >= m.n_vertices) return 2;
        const SnapV v = sv[i];
        if (v.x == kInvalid) return 2;
        tri.X[k] = v.x;
        tri.Y[k] = v.y;
        tri.z[k] = v.z;
        tri.idx[k] = i;
    }
    int64_t area = (tri.X[1] - tri.X[0]) * (tri.Y[2] - tri.Y[0]) -
                   (tri.Y[1] - tri.Y[0]) * (tri.X[2] - tri.X[0]);
    if (area == 0) return 1;
    // In the y-down pixel grid a front face (CCW in a y-up view) has area < 0.
    tri.back = area > 0;
    if (area < 0) {
        std::swap(tri.X[1], tri.X[2]);
        std::swap(tri.Y[1], tri.Y[2]);
        std::swap(tri.z[1], tri.z[2]);
        std::swap(tri.idx[1], tri.idx[2]);
        area = -area;
    }
    tri.area = area;
    return 0;
}

// Edge k runs from vertex k+1 to vertex k+2 (opposite vertex k):
// E_k(p) = (bx - ax) (py - ay) - (by - ay) (px - ax).  Top-left rule: a pixel centre exactly
// on the edge is inside only for edges with dy < 0, or dy == 0 and dx > 0 (top and left
// edges of a triangle with positive area in the y-down grid).
struct Edge {
    int64_t ax, ay, dx, dy;
    int64_t bias;  // 0 for top-left edges, -1 otherwise
    inline int64_t at(int64_t px, int64_t py) const { return dx * (py - ay) - dy * (px - ax); }
};

inline Edge make_edge(const Tri& t, int k) {
    int a = (k + 1) % 3, b = (k + 2) % 3;
    Edge e;
    e.ax = t.X[a];
    e.ay = t.Y[a];
    e.dx = t.X[b] - t.X[a];
    e.dy = t.Y[b] - t.Y[a];
    bool top_left = (e.dy < 0) || (e.dy == 0 && e.dx > 0);
    e.bias = top_left ? 0 : -1;
    return e;
}

struct Buffers {
    float* depth;     // z-buffer
    int32_t* id;      // visible triangle, numbered across meshes (mesh offset + index), -1
    float* b1;        // barycentric weight of (oriented) vertex 1 at the pixel centre
    float* b2;        // ... of vertex 2 (vertex 0: 1 - b1 - b2)
    int32_t* coverage;
    int width;
};

// Rasterize all meshes into rows [y0, y1): depth test, nearest triangle per pixel.
int64_t raster_band(const S3Mesh* meshes, const SnapV* const* snapped, int n_meshes,
                    const int64_t* first, int cull, const Buffers& buf, int y0, int y1, int W) {
    int64_t skipped = 0;
    for (int mi = 0; mi < n_meshes; ++mi) {
        const S3Mesh& m = meshes[mi];
        const int64_t id0 = first[mi];
        for (int64_t t = 0; t < m.n_triangles; ++t) {
            Tri tri;
            int rc = setup(m, snapped[mi], t, tri);
            if (rc) {
                skipped += (rc == 2);
                continue;
            }
            if ((cull == 1 && tri.back) || (cull == 2 && !tri.back)) continue;
            int64_t minX = std::min({tri.X[0], tri.X[1], tri.X[2]});
            int64_t maxX = std::max({tri.X[0], tri.X[1], tri.X[2]});
            int64_t minY = std::min({tri.Y[0], tri.Y[1], tri.Y[2]});
            int64_t maxY = std::max({tri.Y[0], tri.Y[1], tri.Y[2]});
            // pixel j is a candidate when minX <= j*256+128 <= maxX
            int64_t jx0 = floor_div(minX - kHalf + kSub - 1, kSub);
            int64_t jx1 = floor_div(maxX - kHalf, kSub);
            int64_t iy0 = floor_div(minY - kHalf + kSub - 1, kSub);
            int64_t iy1 = floor_div(maxY - kHalf, kSub);
            jx0 = std::max<int64_t>(jx0, 0);
            jx1 = std::min<int64_t>(jx1, W - 1);
            iy0 = std::max<int64_t>(iy0, y0);
            iy1 = std::min<int64_t>(iy1, y1 - 1);
            if (jx0 > jx1 || iy0 > iy1) continue;
            Edge e0 = make_edge(tri, 0), e1 = make_edge(tri, 1), e2 = make_edge(tri, 2);
            const double inv_area = 1.0 / static_cast<double>(tri.area);
            // depth plane: z = sum_k z_k E_k / area; per-pixel steps
            const double dzx = -(tri.z[0] * e0.dy + tri.z[1] * e1.dy + tri.z[2] * e2.dy) *
                               kSub * inv_area;
            const int64_t sx0 = -e0.dy * kSub, sx1 = -e1.dy * kSub, sx2 = -e2.dy * kSub;
            const int64_t sy0 = e0.dx * kSub, sy1 = e1.dx * kSub, sy2 = e2.dx * kSub;
            const int64_t px = jx0 * kSub + kHalf;
            int64_t py = iy0 * kSub + kHalf;
            int64_t r0 = e0.at(px, py), r1 = e1.at(px, py), r2 = e2.at(px, py);
            for (int64_t i = iy0; i <= iy1; ++i, r0 += sy0, r1 += sy1, r2 += sy2) {
                int64_t w0 = r0, w1 = r1, w2 = r2;
                const int64_t row = i * W;
                double z = (tri.z[0] * static_cast<double>(r0) +
                            tri.z[1] * static_cast<double>(r1) +
                            tri.z[2] * static_cast<double>(r2)) * inv_area;
                for (int64_t j = jx0; j <= jx1;
                     ++j, w0 += sx0, w1 += sx1, w2 += sx2, z += dzx) {
                    if (((w0 + e0.bias) | (w1 + e1.bias) | (w2 + e2.bias)) < 0) continue;
                    const int64_t p = row + j;
                    if (buf.coverage) buf.coverage[p] += 1;
                    const float zf = static_cast<float>(z);
                    if (zf > buf.depth[p]) {
                        buf.depth[p] = zf;
                        buf.id[p] = static_cast<int32_t>(2 * (id0 + t) + (tri.back ? 1 : 0));
                        buf.b1[p] = static_cast<float>(static_cast<double>(w1) * inv_area);
                        buf.b2[p] = static_cast<float>(static_cast<double>(w2) * inv_area);
                    }
                }
            }
        }
    }
    return skipped;
}

// Round half up; v is already within [0, 255], so truncation of v + 0.5 is its floor.
inline uint8_t to_u8(double v) { return static_cast<uint8_t>(static_cast<int>(v + 0.5)); }

// x^e for e >= 0: exact repeated squaring for small integer exponents, else pow.
inline double power(double x, double e, int ie) {
    if (ie < 0) return std::pow(x, e);
    double r = 1.0;
    while (ie) {
        if (ie & 1) r *= x;
        x *= x;
        ie >>= 1;
    }
    return r;
}

// Shade rows [y0, y1) once per covered pixel.
void shade_band(const S3Mesh* meshes, int n_meshes, const int64_t* first,
                const std::vector<const float*>& normals, const S3Light* light,
                const S3Target& tg, const Buffers& buf, int y0, int y1) {
    const int W = tg.width;
    const bool lit = light && light->enabled;
    const double alpha = tg.alpha;
    const int n_dir = lit ? light->n_directional : 0;
    const double ks = lit ? light->specular : 0.0;
    const double shin = lit ? light->shininess : 1.0;
    const int ishin = (shin >= 0 && shin <= 256 && std::floor(shin) == shin) ? static_cast<int>(shin) : -1;
    int mi = 0;
    for (int64_t i = y0; i < y1; ++i) {
        for (int64_t j = 0; j < W; ++j) {
            const int64_t p = i * W + j;
            const int32_t code = buf.id[p];
            if (tg.mask) tg.mask[p] = code >= 0;
            if (code < 0) {
                if (tg.tri_index) tg.tri_index[p] = -1;
                if (tg.mesh_index) tg.mesh_index[p] = -1;
                continue;
            }
            const int64_t gid = code >> 1;
            const bool back = code & 1;
            while (gid < first[mi]) --mi;
            while (mi + 1 < n_meshes && gid >= first[mi + 1]) ++mi;
            const S3Mesh& m = meshes[mi];
            const int64_t t = gid - first[mi];
            if (tg.tri_index) tg.tri_index[p] = static_cast<int32_t>(t);
            if (tg.mesh_index) tg.mesh_index[p] = mi;
            const int32_t* ti = m.triangles + 3 * t;
            // oriented vertex order used during rasterization (front faces were swapped)
            const int32_t i0 = ti[0], i1 = back ? ti[1] : ti[2], i2 = back ? ti[2] : ti[1];
            const double l1 = buf.b1[p], l2 = buf.b2[p], l0 = 1.0 - l1 - l2;
            double c[3];
            if (m.colors) {
                const float *c0 = m.colors + 3 * i0, *c1 = m.colors + 3 * i1, *c2 = m.colors + 3 * i2;
                for (int ch = 0; ch < 3; ++ch) c[ch] = l0 * c0[ch] + l1 * c1[ch] + l2 * c2[ch];
            } else {
                for (int ch = 0; ch < 3; ++ch) c[ch] = m.default_color[ch];
            }
            if (lit) {
                const float* N = normals[mi];
                const float *n0 = N + 3 * i0, *n1 = N + 3 * i1, *n2 = N + 3 * i2;
                double n[3];
                for (int a = 0; a < 3; ++a) n[a] = l0 * n0[a] + l1 * n1[a] + l2 * n2[a];
                double len2 = n[0] * n[0] + n[1] * n[1] + n[2] * n[2];
                if (len2 > 0) {
                    double s = (back ? -1.0 : 1.0) / std::sqrt(len2);  // two-sided lighting
                    n[0] *= s, n[1] *= s, n[2] *= s;
                }
                double diff[3] = {light->ambient[0], light->ambient[1], light->ambient[2]};
                double spec[3] = {0, 0, 0};
                for (int d = 0; d < n_dir; ++d) {
                    const float* L = light->directions + 3 * d;
                    const float* C = light->colors + 3 * d;
                    double nl = n[0] * L[0] + n[1] * L[1] + n[2] * L[2];
                    if (nl <= 0) continue;
                    double sp = 0;
                    if (ks > 0) {
                        double rz = 2 * nl * n[2] - L[2];  // reflection . view (0, 0, 1)
                        if (rz > 0) sp = ks * power(rz, shin, ishin);
                    }
                    for (int ch = 0; ch < 3; ++ch) {
                        diff[ch] += C[ch] * nl;
                        spec[ch] += C[ch] * sp;
                    }
                }
                for (int ch = 0; ch < 3; ++ch) c[ch] = c[ch] * diff[ch] + spec[ch];
            }
            uint8_t* out = tg.image + 3 * p;
            for (int ch = 0; ch < 3; ++ch) {
                double v = std::min(1.0, std::max(0.0, c[ch])) * 255.0;
                if (alpha < 1.0) v = alpha * v + (1.0 - alpha) * out[ch];
                out[ch] = to_u8(v);
            }
        }
    }
}

template <typename T>
T* scratch(std::unique_ptr<T[]>& own, int64_t n) {
    own.reset(new T[n]);
    return own.get();
}

// Per-thread scratch memory reused across calls (avoids page faults of fresh buffers).
struct Scratch {
    std::vector<float> depth, b1, b2;
    std::vector<int32_t> id;
};

Scratch& thread_scratch(int64_t npix, bool need_depth) {
    thread_local Scratch s;
    if (static_cast<int64_t>(s.id.size()) < npix) {
        s.id.resize(npix);
        s.b1.resize(npix);
        s.b2.resize(npix);
    }
    if (need_depth && static_cast<int64_t>(s.depth.size()) < npix) s.depth.resize(npix);
    return s;
}

int64_t render_one(const S3Mesh* meshes, int n_meshes, const S3Light* light, S3Target* tg,
                   int n_threads) {
    const int H = tg->height, W = tg->width;
    if (H <= 0 || W <= 0) return 0;
    const int64_t npix = static_cast<int64_t>(H) * W;
    Scratch& sc = thread_scratch(npix, tg->depth == nullptr);
    Buffers buf;
    buf.width = W;
    buf.coverage = tg->coverage;
    buf.depth = tg->depth ? tg->depth : sc.depth.data();
    buf.id = sc.id.data();
    buf.b1 = sc.b1.data();
    buf.b2 = sc.b2.data();
    std::vector<int64_t> first(n_meshes + 1, 0);
    for (int mi = 0; mi < n_meshes; ++mi) first[mi + 1] = first[mi] + meshes[mi].n_triangles;
    if (first[n_meshes] >= (int64_t(1) << 30)) return -1;  // ids must fit 30 bits
    // vertex normals (outward in image coordinates) for lighting
    std::vector<std::unique_ptr<float[]>> normals_own(n_meshes);
    std::vector<const float*> normals(n_meshes, nullptr);
    if (light && light->enabled) {
        for (int mi = 0; mi < n_meshes; ++mi) {
            if (meshes[mi].normals) {
                normals[mi] = meshes[mi].normals;
            } else {
                normals[mi] = scratch(normals_own[mi], 3 * meshes[mi].n_vertices);
                s3_vertex_normals(meshes[mi].vertices, meshes[mi].triangles,
                                  meshes[mi].n_vertices, meshes[mi].n_triangles, -1.0f,
                                  normals_own[mi].get());
            }
        }
    }
    std::vector<std::vector<SnapV>> snapped_own(n_meshes);
    std::vector<const SnapV*> snapped(n_meshes);
    for (int mi = 0; mi < n_meshes; ++mi) {
        snapped_own[mi].resize(meshes[mi].n_vertices);
        snap_vertices(meshes[mi], snapped_own[mi].data());
        snapped[mi] = snapped_own[mi].data();
    }
    n_threads = std::max(1, std::min(n_threads, H));
    std::vector<int64_t> skipped(n_threads, 0);
    auto work = [&](int k) {
        const int64_t y0 = H * static_cast<int64_t>(k) / n_threads;
        const int64_t y1 = H * static_cast<int64_t>(k + 1) / n_threads;
        std::fill(buf.depth + y0 * W, buf.depth + y1 * W, -std::numeric_limits<float>::infinity());
        std::fill(buf.id + y0 * W, buf.id + y1 * W, -1);
        skipped[k] = raster_band(meshes, snapped.data(), n_meshes, first.data(), tg->cull, buf,
                                 static_cast<int>(y0), static_cast<int>(y1), W);
        shade_band(meshes, n_meshes, first.data(), normals, light, *tg, buf,
                   static_cast<int>(y0), static_cast<int>(y1));
    };
    if (n_threads == 1) {
        work(0);
    } else {
        std::vector<std::thread> pool;
        for (int k = 1; k < n_threads; ++k) pool.emplace_back(work, k);
        work(0);
        for (auto& th : pool) th.join();
    }
    return skipped[0];
}

}  // namespace

extern "C" {

void s3_vertex_normals(const float* vertices, const int32_t* triangles, int64_t n_vertices,
                       int64_t n_triangles, float sign, float* out) {
    std::vector<float> acc(3 * n_vertices, 0.0f);
    for (int64_t t = 0; t < n_triangles; ++t) {
        const int32_t* ti = triangles + 3 * t;
        if (ti[0] < 0 || ti[1] < 0 || ti[2] < 0 || ti[0] >= n_vertices ||
            ti[1] >= n_vertices || ti[2] >= n_vertices)
            continue;
        const float* a = vertices + 3 * static_cast<int64_t>(ti[0]);
        const float* b = vertices + 3 * static_cast<int64_t>(ti[1]);
        const float* c = vertices + 3 * static_cast<int64_t>(ti[2]);
        float u[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
        float v[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
        float n[3] = {u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2],
                       u[0] * v[1] - u[1] * v[0]};
        if (!(std::isfinite(n[0]) && std::isfinite(n[1]) && std::isfinite(n[2]))) continue;
        for (int k = 0; k < 3; ++k)
            for (int d = 0; d < 3; ++d) acc[3 * static_cast<int64_t>(ti[k]) + d] += n[d];
    }
    for (int64_t i = 0; i < n_vertices; ++i) {
        const float* n = &acc[3 * i];
        double len = std::sqrt(double(n[0]) * n[0] + double(n[1]) * n[1] + double(n[2]) * n[2]);
        double s = len > 0 ? sign / len : 0.0;
        for (int d = 0; d < 3; ++d) out[3 * i + d] = static_cast<float>(n[d] * s);
    }
}

int64_t s3_render(const S3Mesh* meshes, int n_meshes, const S3Light* light, S3Target* target,
                  int n_threads) {
    return render_one(meshes, n_meshes, light, target, n_threads);
}

int64_t s3_render_batch(const S3Mesh* meshes, const int64_t* offsets, int n_images,
                        const S3Light* lights, S3Target* targets, int n_threads) {
    std::atomic<int> next(0);
    std::vector<int64_t> skipped(std::max(1, n_threads), 0);
    auto work = [&](int k) {
        for (int i = next++; i < n_images; i = next++) {
            skipped[k] += render_one(meshes + offsets[i], static_cast<int>(offsets[i + 1] - offsets[i]),
                                     lights + i, targets + i, 1);
        }
    };
    n_threads = std::max(1, std::min(n_threads, n_images));
    if (n_threads == 1) {
        work(0);
    } else {
        std::vector<std::thread> pool;
        for (int k = 1; k < n_threads; ++k) pool.emplace_back(work, k);
        work(0);
        for (auto& th : pool) th.join();
    }
    int64_t total = 0;
    for (auto s : skipped) total += s;
    return total;
}

}  // extern "C"
