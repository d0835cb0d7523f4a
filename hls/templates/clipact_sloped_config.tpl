// FT-ClipAct (${mode}, below zero ${alpha}): threshold ${requested} requested; compared in ${input_type} as ${threshold} (code ${code})
struct clipact_config${index} : nnet::clipact_config {
    static const unsigned n_in = ${n_in};
    static const unsigned io_type = nnet::${iotype};
    static const bool saturate = ${saturate};
    static constexpr double threshold = ${threshold};
    typedef ${param_t} param_t;${table}
};
