// (zoo/: it names functors from every part of the library, so it sits at the top with the
// mixer registry.) Every instantiation of the device backend that host code compiled without it can need: the
// ops of ops/device.hpp for float, Buffer<T, backend::Cuda>'s member functions, the device
// context's calls, and ops::device::for_each for each functor a layer or a stage runs.
//
// Include it in exactly one translation unit, after the definitions: ops/cuda/device_ops.cuh in
// an nvcc translation unit (the real backend; examples/cuda/device_ops.cu), or a stand-in's
// (tests/device_emulation.cpp). Host programs (drivers, tests) then compile with any C++ compiler
// against the declarations alone and link that object. A layer or stage that starts calling
// for_each with a new functor needs a line below: until then, linking a program that runs it on
// backend::Cuda fails and names the missing `for_each<...>`.
#pragma once
#include <cstdint>

#include "seqswap/core/buffer.hpp"
#include "seqswap/distill/stages.hpp"           // distill::detail::MatchRows
#include "seqswap/mixers/linear_attention.hpp"  // mixers::FeatureTraits
#include "seqswap/ops/conv_rows.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/elementwise.hpp"
#include "seqswap/ops/linear_attention_rows.hpp"
#include "seqswap/ops/retention_rows.hpp"
#include "seqswap/ops/rnn_rows.hpp"
#include "seqswap/ops/ssm_rows.hpp"

namespace seqswap {
template class Buffer<float, backend::Cuda>;
template class Buffer<double, backend::Cuda>;
template class Buffer<index_t, backend::Cuda>;
template class Buffer<std::int32_t, backend::Cuda>;
template class Buffer<std::uint8_t, backend::Cuda>;
template class Buffer<ops::flash::RowStats<float>, backend::Cuda>;
}  // namespace seqswap

namespace seqswap::ops::device {
template bool available<>();
template void synchronize<>();
template void set_tf32<>(bool on);

template void linear_forward<float>(const float* x, index_t rows, index_t in, const float* w, const float* b, index_t out, float* y);
template void linear_backward<float>(const float* x, index_t rows, index_t in, const float* w, index_t out, const float* dy, float* dx, float* dw, float* db);
template void layer_norm_forward<float>(const float* x, index_t rows, index_t D, const float* gamma, const float* beta, float eps, float* y, float* mean, float* rstd);
template void layer_norm_backward<float>(const float* x, index_t rows, index_t D, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx, float* dgamma, float* dbeta);
template void gelu_forward<float>(const float* x, index_t n, float* y);
template void gelu_backward<float>(const float* x, const float* dy, index_t n, float* dx);
template void residual_add<float>(const float* x, const float* f, const std::uint8_t* keep, index_t rows, index_t D, float* y);
template void add_into<float>(float* y, const float* x, index_t n);
template void add_kept_rows<float>(float* y, const float* x, index_t rows, index_t D, const std::uint8_t* keep);
template void copy_kept_rows<float>(const float* src, float* dst, index_t rows, index_t D, const std::uint8_t* keep);
template void zero_masked_rows<float>(float* y, index_t rows, index_t D, const std::uint8_t* keep);
template void fill_zero<float>(float* y, index_t n);
template void gather_rows<float>(const float* full, const index_t* idx, index_t rows, index_t D, float* packed);
template void scatter_rows<float>(const float* packed, const index_t* idx, index_t rows, index_t D, float* full);
template void gather_rows<std::uint8_t>(const std::uint8_t* full, const index_t* idx, index_t rows, index_t D,
                                        std::uint8_t* packed);
template void patch_unfold<float>(const float* img, index_t batch, index_t C, index_t S, index_t p, float* cols);
template void patch_fold<float>(const float* cols, index_t batch, index_t C, index_t S, index_t p, float* img);
template void cls_pos_forward<float>(const float* x, index_t batch, index_t P, index_t D, const float* cls, const float* pos, float* y);
template void cls_pos_backward<float>(const float* dy, index_t batch, index_t P, index_t D, float* dcls, float* dpos, float* dx);
template void attention_forward<float>(const flash::Problem<float>& p, index_t rows, float* pre, flash::RowStats<float>* stats);
template void attention_backward<float>(const flash::Problem<float>& p, index_t rows, const flash::RowStats<float>* stats, const float* pre, const float* dpre, float* delta, float* dqkv);
template void linear_scan<float>(const float* a, const float* b, float* h, const index_t* offsets, index_t batch, index_t C, bool reverse);
template void linear_scan_backward<float>(const float* a, const float* h, const float* dh, float* da, float* db, const index_t* offsets, index_t batch, index_t C, bool reverse);
template void min_gru_gates<float>(const float* zh, const std::uint8_t* keep, index_t rows, index_t E, float* a, float* b);
template void min_gru_gates_backward<float>(const float* zh, const float* da, const float* db, const std::uint8_t* keep, index_t rows, index_t E, float* dzh);
template void combine_directions<float>(const float* h0, const float* h1, const std::uint8_t* keep, index_t rows, index_t E, bool concat, float* pre);
template void copy_columns<float>(const float* src, index_t rows, index_t width, index_t off, index_t E, float* dst);
template void ssm_scan_forward<float>(const ssm::Scan<float>& a, float* y, bool accumulate, float* ckpt);
template void ssm_scan_backward<float>(const ssm::Scan<float>& a, const ssm::ScanGrads<float>& g, index_t rows, float* dxdbl, index_t ld, index_t R, float* gA_log, float* gD);
template void add_weighted_rows<float>(float* y, const float* w, const float* t, index_t rows, index_t D);
template void row_dots<float>(const float* a, const float* b, index_t rows, index_t D, double* out);
template void halting_grad<float>(const float* w, const float* dout, const float* carry, const float* du, const std::uint8_t* act, index_t rows, index_t D, float* dt);
template void cross_entropy<float>(const float* logits, const std::int32_t* labels, index_t B, index_t C, double smoothing, float* dlogits, double* loss, std::uint8_t* correct);
template void adamw_step<float>(float* p, const float* g, float* m, float* v, index_t n, const std::uint8_t* decay, const std::uint8_t* trainable, const rows::AdamWCoefs<float>& k);
template double sum_squares<float>(const float* x, index_t n);
template void scale<float>(float* x, index_t n, float s);

// for_each: every functor the layers, the mixers and the distillation stages run.
template void for_each<distill::detail::MatchRows<float>>(index_t, const distill::detail::MatchRows<float>&, const char*);
template void for_each<ops::conv::Forward<float>>(index_t, const ops::conv::Forward<float>&, const char*);
template void for_each<ops::conv::InputGrad<float>>(index_t, const ops::conv::InputGrad<float>&, const char*);
template void for_each<ops::conv::ParamGrad<float>>(index_t, const ops::conv::ParamGrad<float>&, const char*);
template void for_each<ops::conv::PatchMean<float>>(index_t, const ops::conv::PatchMean<float>&, const char*);
template void for_each<ops::linattn::DFeatures<float, mixers::FeatureTraits<mixers::feature::Elu1>>>(index_t, const ops::linattn::DFeatures<float, mixers::FeatureTraits<mixers::feature::Elu1>>&, const char*);
template void for_each<ops::linattn::DFeatures<float, mixers::FeatureTraits<mixers::feature::Relu>>>(index_t, const ops::linattn::DFeatures<float, mixers::FeatureTraits<mixers::feature::Relu>>&, const char*);
template void for_each<ops::linattn::DNum<float>>(index_t, const ops::linattn::DNum<float>&, const char*);
template void for_each<ops::linattn::DPhiK<float>>(index_t, const ops::linattn::DPhiK<float>&, const char*);
template void for_each<ops::linattn::DPhiQ<float>>(index_t, const ops::linattn::DPhiQ<float>&, const char*);
template void for_each<ops::linattn::DState<float>>(index_t, const ops::linattn::DState<float>&, const char*);
template void for_each<ops::linattn::DV<float>>(index_t, const ops::linattn::DV<float>&, const char*);
template void for_each<ops::linattn::Features<float, mixers::FeatureTraits<mixers::feature::Elu1>>>(index_t, const ops::linattn::Features<float, mixers::FeatureTraits<mixers::feature::Elu1>>&, const char*);
template void for_each<ops::linattn::Features<float, mixers::FeatureTraits<mixers::feature::Relu>>>(index_t, const ops::linattn::Features<float, mixers::FeatureTraits<mixers::feature::Relu>>&, const char*);
template void for_each<ops::linattn::HedgehogDw<float>>(index_t, const ops::linattn::HedgehogDw<float>&, const char*);
template void for_each<ops::linattn::HedgehogDx<float>>(index_t, const ops::linattn::HedgehogDx<float>&, const char*);
template void for_each<ops::linattn::HedgehogExp<float>>(index_t, const ops::linattn::HedgehogExp<float>&, const char*);
template void for_each<ops::linattn::HedgehogExponentGrad<float>>(index_t, const ops::linattn::HedgehogExponentGrad<float>&, const char*);
template void for_each<ops::linattn::HedgehogKeyShift<float>>(index_t, const ops::linattn::HedgehogKeyShift<float>&, const char*);
template void for_each<ops::linattn::HedgehogProject<float>>(index_t, const ops::linattn::HedgehogProject<float>&, const char*);
template void for_each<ops::linattn::Output<float>>(index_t, const ops::linattn::Output<float>&, const char*);
template void for_each<ops::linattn::State<float>>(index_t, const ops::linattn::State<float>&, const char*);
template void for_each<ops::retention::BackwardColumns<float>>(index_t, const ops::retention::BackwardColumns<float>&, const char*);
template void for_each<ops::retention::BackwardRows<float>>(index_t, const ops::retention::BackwardRows<float>&, const char*);
template void for_each<ops::retention::Forward<float>>(index_t, const ops::retention::Forward<float>&, const char*);
template void for_each<ops::retention::InvC<float>>(index_t, const ops::retention::InvC<float>&, const char*);
template void for_each<ops::retention::ScaleQ<float>>(index_t, const ops::retention::ScaleQ<float>&, const char*);
template void for_each<ops::rnn::Backward<float>>(index_t, const ops::rnn::Backward<float>&, const char*);
template void for_each<ops::rnn::CellGrads<float>>(index_t, const ops::rnn::CellGrads<float>&, const char*);
template void for_each<ops::rnn::Forward<float>>(index_t, const ops::rnn::Forward<float>&, const char*);
template void for_each<ops::rnn::GateInputs<float>>(index_t, const ops::rnn::GateInputs<float>&, const char*);
template void for_each<ops::rnn::InputGrad<float>>(index_t, const ops::rnn::InputGrad<float>&, const char*);
template void for_each<ops::ssm::ConvBackward<float>>(index_t, const ops::ssm::ConvBackward<float>&, const char*);
template void for_each<ops::ssm::ConvForward<float>>(index_t, const ops::ssm::ConvForward<float>&, const char*);
template void for_each<ops::ssm::CopyBlock<float>>(index_t, const ops::ssm::CopyBlock<float>&, const char*);
template void for_each<ops::ssm::DiagDiscretise<float>>(index_t, const ops::ssm::DiagDiscretise<float>&, const char*);
template void for_each<ops::ssm::DiagDiscretiseBackward<float>>(index_t, const ops::ssm::DiagDiscretiseBackward<float>&, const char*);
template void for_each<ops::ssm::DiagInputGrad<float>>(index_t, const ops::ssm::DiagInputGrad<float>&, const char*);
template void for_each<ops::ssm::DiagInputs<float>>(index_t, const ops::ssm::DiagInputs<float>&, const char*);
template void for_each<ops::ssm::DiagOutput<float>>(index_t, const ops::ssm::DiagOutput<float>&, const char*);
template void for_each<ops::ssm::DiagParamSums<float>>(index_t, const ops::ssm::DiagParamSums<float>&, const char*);
template void for_each<ops::ssm::DiagSkipBackward<float>>(index_t, const ops::ssm::DiagSkipBackward<float>&, const char*);
template void for_each<ops::ssm::DiagStateGrad<float>>(index_t, const ops::ssm::DiagStateGrad<float>&, const char*);
template void for_each<ops::ssm::Gate<float>>(index_t, const ops::ssm::Gate<float>&, const char*);
template void for_each<ops::ssm::GateBackward<float>>(index_t, const ops::ssm::GateBackward<float>&, const char*);
template void for_each<ops::ssm::NegExp<float>>(index_t, const ops::ssm::NegExp<float>&, const char*);
template void for_each<ops::ssm::SiluBackward<float>>(index_t, const ops::ssm::SiluBackward<float>&, const char*);
template void for_each<ops::ssm::Softplus<float>>(index_t, const ops::ssm::Softplus<float>&, const char*);
template void for_each<ops::ssm::SumOverSequences<float>>(index_t, const ops::ssm::SumOverSequences<float>&, const char*);
}  // namespace seqswap::ops::device
