nnet::${function}<${input_t}, ${param_t}, ${output_t}, clipact_config${index}>(${input}, ${param}, ${output});
