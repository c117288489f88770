// OpenVINO CPU kernel of TensorRT's MultiscaleDeformableAttnPlugin_TRT (segclip.runtime.ov_extension).
//
// The contract is the plugin's (segclip.runtime.msda_plugin, from NVIDIA's README and CUDA kernel):
//   value [N, S, M, D] f32, spatial_shapes [L, 2] (h, w) int, level_start_index [L] int,
//   sampling_locations [N, Lq, M, L, P, 2] f32 (x, y in 0..1), attention_weights [N, Lq, M, L, P] f32
//   -> output [N, Lq, M, D] f32.
// Per level: h_im = y * H - 0.5, w_im = x * W - 0.5; a point with -1 < h_im < H and -1 < w_im < W is sampled
// bilinearly (corners outside the map read 0), else it adds nothing; the output sums sample * weight.
//
// Why a kernel: OpenVINO runs the GridSample form as one GridSample per level and point gathering single floats
// from D x H x W planes and writing the sampled tensor out (28-31% of segclip-r50's INT8 time).  value is
// channels-last here, so each bilinear tap reads one contiguous D-float row, and the weighted sum stays in
// registers.  target_clones picks AVX-512 / AVX2 / baseline code at load time, so one build runs on any x86-64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>
#include <openvino/op/op.hpp>

namespace segclip {

static constexpr const char* kPluginName = "MultiscaleDeformableAttnPlugin_TRT";
static constexpr const char* kPluginDomain = "trt.plugins";

// SEGCLIP_ONE_ISA: one code path, the compiler flags' (the tests build the AVX2 and baseline paths this way)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SEGCLIP_ONE_ISA)
#define SEGCLIP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SEGCLIP_CLONES
#endif

// One query: every head's D outputs.  lq: [M, L, P, 2] (x, y), wq: [M, L, P], out: [M, D].
// DC > 0: D known at compile time (segclip's heads have D = 32), so each tap's row is a few vector FMAs.
// A point whose four corners are all inside its level (most of them) takes one fused loop over the four rows
// (measured 1.2x faster than a loop per corner); at the edges, corners outside the level are skipped (computing
// all four branch-free with weight 0 was 1.5x slower).  Prefetching the next point's rows bought nothing.
template <int DC>
SEGCLIP_CLONES static void msda_query(const float* value, const int64_t* hw, const int64_t* starts, const float* lq,
                                      const float* wq, float* out, int64_t M, int64_t D_, int64_t L, int64_t P) {
    const int64_t D = DC > 0 ? DC : D_;
    float acc[DC > 0 ? DC : 1024];
    for (int64_t m = 0; m < M; ++m) {
        std::fill(acc, acc + D, 0.f);
        const float* lm = lq + m * L * P * 2;
        const float* wm = wq + m * L * P;
        for (int64_t l = 0; l < L; ++l) {
            const int64_t H = hw[2 * l], W = hw[2 * l + 1];
            const float* vl = value + (starts[l] * M + m) * D;  // token t of this level, head m: vl + t * M * D
            for (int64_t p = 0; p < P; ++p) {
                const float y = lm[2 * (l * P + p) + 1] * H - 0.5f, x = lm[2 * (l * P + p)] * W - 0.5f;
                if (!(y > -1.f && x > -1.f && y < H && x < W))  // also false for NaN
                    continue;
                const float a = wm[l * P + p];
                const int64_t y0 = (int64_t)std::floor(y), x0 = (int64_t)std::floor(x);
                const float fy = y - y0, fx = x - x0;
                if (y0 >= 0 && x0 >= 0 && y0 + 1 < H && x0 + 1 < W) {  // all four corners inside: most points
                    const int64_t MD = M * D;
                    const float* r0 = vl + (y0 * W + x0) * MD;
                    const float* r1 = r0 + W * MD;
                    const float w00 = a * (1.f - fy) * (1.f - fx), w01 = a * (1.f - fy) * fx;
                    const float w10 = a * fy * (1.f - fx), w11 = a * fy * fx;
                    for (int64_t c = 0; c < D; ++c)
                        acc[c] += w00 * r0[c] + w01 * r0[MD + c] + w10 * r1[c] + w11 * r1[MD + c];
                    continue;
                }
                const float wy[2] = {1.f - fy, fy}, wx[2] = {1.f - fx, fx};
                for (int j = 0; j < 2; ++j) {
                    const int64_t yy = y0 + j;
                    if (yy < 0 || yy >= H)
                        continue;
                    for (int i = 0; i < 2; ++i) {
                        const int64_t xx = x0 + i;
                        if (xx < 0 || xx >= W)
                            continue;
                        const float w = a * wy[j] * wx[i];
                        const float* row = vl + (yy * W + xx) * M * D;
                        for (int64_t c = 0; c < D; ++c)
                            acc[c] += w * row[c];
                    }
                }
            }
        }
        std::memcpy(out + m * D, acc, sizeof(float) * D);
    }
}

static std::vector<int64_t> as_int64(const ov::Tensor& t) {
    std::vector<int64_t> out(t.get_size());
    if (t.get_element_type() == ov::element::i32) {
        const int32_t* p = t.data<const int32_t>();
        std::copy(p, p + out.size(), out.begin());
    } else if (t.get_element_type() == ov::element::i64) {
        const int64_t* p = t.data<const int64_t>();
        std::copy(p, p + out.size(), out.begin());
    } else {
        OPENVINO_THROW(kPluginName, ": spatial_shapes and level_start_index must be int32 or int64");
    }
    return out;
}

class MultiscaleDeformableAttn : public ov::op::Op {
public:
    OPENVINO_OP("MultiscaleDeformableAttn", "segclip");

    MultiscaleDeformableAttn() = default;
    explicit MultiscaleDeformableAttn(const ov::OutputVector& args) : Op(args) { constructor_validate_and_infer_types(); }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 5, kPluginName, " takes 5 inputs");
        const auto et = get_input_element_type(0);
        NODE_VALIDATION_CHECK(this, et == ov::element::f32 || et.is_dynamic(), kPluginName,
                              ": segclip's CPU kernel takes FP32 value (got ", et, ")");
        const auto& v = get_input_partial_shape(0);
        const auto& loc = get_input_partial_shape(3);
        ov::PartialShape out = ov::PartialShape::dynamic(4);
        if (v.rank().is_static() && loc.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, v.rank().get_length() == 4 && loc.rank().get_length() == 6, kPluginName,
                                  ": value must be [N, S, M, D] and sampling_locations [N, Lq, M, L, P, 2]");
            out = ov::PartialShape{v[0], loc[1], v[2], v[3]};
        }
        set_output_type(0, ov::element::f32, out);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<MultiscaleDeformableAttn>(args);
    }

    bool visit_attributes(ov::AttributeVisitor&) override { return true; }

    bool has_evaluate() const override { return get_input_element_type(0) == ov::element::f32; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape vs = inputs[0].get_shape(), ls = inputs[3].get_shape();
        const int64_t N = vs[0], S = vs[1], M = vs[2], D = vs[3], Lq = ls[1], L = ls[3], P = ls[4];
        const std::vector<int64_t> hw = as_int64(inputs[1]), starts = as_int64(inputs[2]);
        OPENVINO_ASSERT((int64_t)hw.size() == 2 * L && (int64_t)starts.size() == L, kPluginName,
                        ": spatial_shapes / level_start_index do not match sampling_locations' ", L, " levels");
        for (int64_t l = 0; l < L; ++l)
            OPENVINO_ASSERT(starts[l] >= 0 && starts[l] + hw[2 * l] * hw[2 * l + 1] <= S, kPluginName, ": level ", l,
                            " runs past value's ", S, " tokens");
        outputs[0].set_shape(ov::Shape{(size_t)N, (size_t)Lq, (size_t)M, (size_t)D});
        OPENVINO_ASSERT(D <= 1024, kPluginName, ": head dim ", D, "; segclip's kernel takes at most 1024");
        const float* value = inputs[0].data<const float>();
        const float* loc = inputs[3].data<const float>();
        const float* attw = inputs[4].data<const float>();
        float* out = outputs[0].data<float>();
        // runs inside the CPU plugin's stream: parallel_for takes that stream's threads (INFERENCE_NUM_THREADS)
        ov::parallel_for(N * Lq, [&](int64_t nq) {
            const float* v = value + (nq / Lq) * S * M * D;
            const int64_t per_q = M * L * P;
            if (D == 32)
                msda_query<32>(v, hw.data(), starts.data(), loc + nq * per_q * 2, attw + nq * per_q, out + nq * M * D, M, D, L, P);
            else
                msda_query<0>(v, hw.data(), starts.data(), loc + nq * per_q * 2, attw + nq * per_q, out + nq * M * D, M, D, L, P);
        });
        return true;
    }
};

}  // namespace segclip

// The op, and the ONNX frontend's mapping of the plugin node (any domain it is written in) to it.
OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<segclip::MultiscaleDeformableAttn>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>(
        segclip::kPluginName, segclip::kPluginDomain,
        [](const ov::frontend::NodeContext& ctx) -> ov::OutputVector {
            ov::OutputVector args;
            for (size_t i = 0; i < ctx.get_input_size(); ++i)
                args.push_back(ctx.get_input(static_cast<int>(i)));
            return std::make_shared<segclip::MultiscaleDeformableAttn>(args)->outputs();
        }),
}));
