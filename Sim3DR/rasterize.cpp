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

// Per-pixel record kept during rasterization (one cache line touch per depth test).
struct Frag {
    float depth;  // z-buffer
    int32_t id;   // 2 * (visible triangle numbered across meshes) + back-facing bit; -1 none
    float b1;     // barycentric weight of (oriented) vertex 1 at the pixel centre
    float b2;     // ... of vertex 2 (vertex 0: 1 - b1 - b2)
};

struct Buffers {
    Frag* frag;
    int32_t* row_lo;  // per row: first column any triangle's bounding box touched (W if none)
    int32_t* row_hi;  // per row: last such column (-1 if none)
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
                if (jx0 < buf.row_lo[i]) buf.row_lo[i] = static_cast<int32_t>(jx0);
                if (jx1 > buf.row_hi[i]) buf.row_hi[i] = static_cast<int32_t>(jx1);
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
                    Frag& f = buf.frag[p];
                    if (zf > f.depth) {
                        f.depth = zf;
                        f.id = static_cast<int32_t>(2 * (id0 + t) + (tri.back ? 1 : 0));
                        f.b1 = static_cast<float>(static_cast<double>(w1) * inv_area);
                        f.b2 = static_cast<float>(static_cast<double>(w2) * inv_area);
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

// c <- c * (ambient + sum_i C_i max(0, n.L_i)) + sum_i C_i ks max(0, r_i.v)^shininess for a
// unit normal n (viewer v = (0, 0, 1), r_i = 2 (n.L_i) n - L_i).
inline void apply_light(const S3Light& light, int ishin, const double n[3], double c[3]) {
    double diff[3] = {light.ambient[0], light.ambient[1], light.ambient[2]};
    double spec[3] = {0, 0, 0};
    const double ks = light.specular;
    for (int d = 0; d < light.n_directional; ++d) {
        const float* L = light.directions + 3 * d;
        const float* C = light.colors + 3 * d;
        const double nl = n[0] * L[0] + n[1] * L[1] + n[2] * L[2];
        if (nl <= 0) continue;
        double sp = 0;
        if (ks > 0) {
            const double rz = 2 * nl * n[2] - L[2];  // reflection . view (0, 0, 1)
            if (rz > 0) sp = ks * power(rz, light.shininess, ishin);
        }
        for (int ch = 0; ch < 3; ++ch) {
            diff[ch] += C[ch] * nl;
            spec[ch] += C[ch] * sp;
        }
    }
    for (int ch = 0; ch < 3; ++ch) c[ch] = c[ch] * diff[ch] + spec[ch];
}

inline int integer_shininess(double shin) {
    return (shin >= 0 && shin <= 256 && std::floor(shin) == shin) ? static_cast<int>(shin) : -1;
}

// Gouraud: lit colours of every vertex for its normal (front) and the flipped normal
// (back), clipped to [0, 1]; (V, 3) each.
void vertex_lighting(const S3Mesh& m, const float* normals, const S3Light& light, float* front,
                     float* back) {
    const int ishin = integer_shininess(light.shininess);
    for (int64_t i = 0; i < m.n_vertices; ++i) {
        const float* N = normals + 3 * i;
        for (int side = 0; side < 2; ++side) {
            const double sg = side ? -1.0 : 1.0;
            const double n[3] = {sg * N[0], sg * N[1], sg * N[2]};
            double c[3];
            for (int ch = 0; ch < 3; ++ch)
                c[ch] = m.colors ? m.colors[3 * i + ch] : m.default_color[ch];
            apply_light(light, ishin, n, c);
            float* out = (side ? back : front) + 3 * i;
            for (int ch = 0; ch < 3; ++ch) out[ch] = static_cast<float>(std::min(1.0, std::max(0.0, c[ch])));
        }
    }
}

// Shade rows [y0, y1) once per covered pixel.
void shade_band(const S3Mesh* meshes, int n_meshes, const int64_t* first,
                const std::vector<const float*>& normals,
                const std::vector<const float*>& lit_front, const std::vector<const float*>& lit_back,
                const S3Light* light, const S3Target& tg, const Buffers& buf, int y0, int y1) {
    const int W = tg.width;
    const bool gouraud = light && light->enabled && light->gouraud;
    const bool lit = light && light->enabled && !gouraud;
    const double alpha = tg.alpha;
    const int ishin = lit ? integer_shininess(light->shininess) : -1;
    int mi = 0;
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t i = y0; i < y1; ++i) {
        // outside the touched column range nothing is drawn: bulk-fill the outputs
        const int64_t lo = std::min<int64_t>(buf.row_lo[i], W), hi = buf.row_hi[i];
        const int64_t row = i * W;
        const int64_t seg[2][2] = {{0, hi < lo ? W : lo}, {hi < lo ? W : hi + 1, W}};
        for (const auto& sg : seg) {
            const int64_t a0 = sg[0], a1 = sg[1];
            if (a0 >= a1) continue;
            if (tg.depth) std::fill(tg.depth + row + a0, tg.depth + row + a1, ninf);
            if (tg.mask) std::fill(tg.mask + row + a0, tg.mask + row + a1, uint8_t(0));
            if (tg.tri_index) std::fill(tg.tri_index + row + a0, tg.tri_index + row + a1, -1);
            if (tg.mesh_index) std::fill(tg.mesh_index + row + a0, tg.mesh_index + row + a1, -1);
        }
        for (int64_t j = lo; j <= hi; ++j) {
            const int64_t p = row + j;
            const Frag& f = buf.frag[p];
            const int32_t code = f.id;
            if (tg.depth) tg.depth[p] = f.depth;
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
            const double l1 = f.b1, l2 = f.b2, l0 = 1.0 - l1 - l2;
            double c[3];
            if (gouraud) {
                const float* V = back ? lit_back[mi] : lit_front[mi];
                const float *c0 = V + 3 * i0, *c1 = V + 3 * i1, *c2 = V + 3 * i2;
                for (int ch = 0; ch < 3; ++ch) c[ch] = l0 * c0[ch] + l1 * c1[ch] + l2 * c2[ch];
            } else if (m.colors) {
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
                apply_light(*light, ishin, n, c);
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

// Per-thread scratch memory reused across calls (no page faults of fresh buffers).  Only
// the fragments inside the previous call's touched row ranges need resetting.
struct Scratch {
    std::vector<Frag> frags;
    std::vector<int32_t> row_lo, row_hi;
    int width = -1;
};

constexpr Frag kEmpty{-std::numeric_limits<float>::infinity(), -1, 0.0f, 0.0f};

Scratch& thread_scratch(int H, int W) {
    thread_local Scratch s;
    const int64_t npix = static_cast<int64_t>(H) * W;
    if (static_cast<int64_t>(s.frags.size()) < npix || s.width != W) {
        if (static_cast<int64_t>(s.frags.size()) < npix) s.frags.resize(npix);
        std::fill(s.frags.begin(), s.frags.end(), kEmpty);
        s.row_lo.assign(std::max<size_t>(s.row_lo.size(), H), W);
        s.row_hi.assign(std::max<size_t>(s.row_hi.size(), H), -1);
        std::fill(s.row_lo.begin(), s.row_lo.end(), W);
        std::fill(s.row_hi.begin(), s.row_hi.end(), -1);
        s.width = W;
    }
    if (static_cast<int>(s.row_lo.size()) < H) {
        s.row_lo.resize(H, W);
        s.row_hi.resize(H, -1);
    }
    return s;
}

// Run work(0..n-1): work(0) on the calling thread, the others on their own threads.
template <class F>
static void run_threads(int n, const F& work) {
    if (n <= 1) {
        work(0);
        return;
    }
    std::vector<std::thread> pool;
    for (int k = 1; k < n; ++k) pool.emplace_back(work, k);
    work(0);
    for (auto& th : pool) th.join();
}

int64_t render_one(const S3Mesh* meshes, int n_meshes, const S3Light* light, S3Target* tg,
                   int n_threads) {
    const int H = tg->height, W = tg->width;
    if (H <= 0 || W <= 0) return 0;
    Buffers buf;
    buf.width = W;
    buf.coverage = tg->coverage;
    Scratch& sc = thread_scratch(H, W);
    buf.frag = sc.frags.data();
    buf.row_lo = sc.row_lo.data();
    buf.row_hi = sc.row_hi.data();
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
    std::vector<std::vector<float>> lit_own(2 * n_meshes);
    std::vector<const float*> lit_front(n_meshes, nullptr), lit_back(n_meshes, nullptr);
    if (light && light->enabled && light->gouraud) {
        for (int mi = 0; mi < n_meshes; ++mi) {
            lit_own[2 * mi].resize(3 * meshes[mi].n_vertices);
            lit_own[2 * mi + 1].resize(3 * meshes[mi].n_vertices);
            vertex_lighting(meshes[mi], normals[mi], *light, lit_own[2 * mi].data(),
                            lit_own[2 * mi + 1].data());
            lit_front[mi] = lit_own[2 * mi].data();
            lit_back[mi] = lit_own[2 * mi + 1].data();
        }
    }
    n_threads = std::max(1, std::min(n_threads, H));
    std::vector<int64_t> skipped(n_threads, 0);
    auto work = [&](int k) {
        const int64_t y0 = H * static_cast<int64_t>(k) / n_threads;
        const int64_t y1 = H * static_cast<int64_t>(k + 1) / n_threads;
        for (int64_t i = y0; i < y1; ++i) {  // reset what the previous call touched
            if (buf.row_lo[i] <= buf.row_hi[i])
                std::fill(buf.frag + i * W + buf.row_lo[i], buf.frag + i * W + buf.row_hi[i] + 1,
                          kEmpty);
            buf.row_lo[i] = W;
            buf.row_hi[i] = -1;
        }
        skipped[k] = raster_band(meshes, snapped.data(), n_meshes, first.data(), tg->cull, buf,
                                 static_cast<int>(y0), static_cast<int>(y1), W);
        shade_band(meshes, n_meshes, first.data(), normals, lit_front, lit_back, light, *tg, buf,
                   static_cast<int>(y0), static_cast<int>(y1));
    };
    run_threads(n_threads, work);
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
    run_threads(n_threads, work);
    int64_t total = 0;
    for (auto s : skipped) total += s;
    return total;
}

}  // extern "C"
